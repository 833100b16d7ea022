"""Domain tests: pure rules, examples and hypothesis properties."""
