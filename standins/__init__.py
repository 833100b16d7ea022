"""Protocol stand-ins: test doubles that speak a real server's protocol.

`standins.comfyui` speaks ComfyUI's HTTP + WebSocket API, `standins.telegram` the Telegram Bot
API and `standins.discord` Discord's Gateway v10 and REST API. They live apart from the product
code (comfy/, adapters/) so that nothing a worker or a bot runs in production imports a test
double, and a reader sees at a glance which is which.
"""
