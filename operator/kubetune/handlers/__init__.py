"""Thin kopf handlers: read, render, apply, observe, patch status."""
