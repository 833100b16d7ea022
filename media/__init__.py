"""Image handling shared by every entry point: accepting untrusted bytes (`media.safety`) and the
Pillow operations of the `media` queue (`media.ops`). Pure functions, no I/O besides Pillow."""
