"""Scripts for running StationThis against a real ComfyUI (docs/real-comfyui.md). Not tests:
they need a ComfyUI checkout and its own venv (torch), which the project never installs."""
