"""Protocol stand-ins: test doubles that speak a real server's protocol.

`standins.comfyui` speaks ComfyUI's HTTP + WebSocket API and `standins.telegram` the Telegram Bot
API. They live apart from the product code (comfy/, adapters/) so that nothing a worker or the bot
runs in production imports a test double, and a reader sees at a glance which is which.
"""
