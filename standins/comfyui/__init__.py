"""The ComfyUI stand-in: speaks ComfyUI's HTTP + WebSocket protocol.

Run it with `python -m standins.comfyui --port P --root DIR`.
"""
