"""Integration tests of the dev-stack launcher and the process helpers it is built on."""
