"""Workflow tests: real Temporal servers, activities mocked at the activity boundary."""
