"""Temporal workflows. They import only domain/ and activity names, never store/ or comfy/."""
