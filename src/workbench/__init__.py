"""Workbench: a self-hosted backend for OpenAI's ChatKit protocol."""
