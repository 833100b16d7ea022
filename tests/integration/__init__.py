"""End to end on the real dev stack: servers, stand-in and workers as real processes."""
