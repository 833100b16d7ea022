"""comfy/standin."""
