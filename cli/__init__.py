"""The nmc command line."""
