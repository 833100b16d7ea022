"""ComfyUI client and the local protocol-compatible ComfyUI stand-in."""
