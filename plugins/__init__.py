"""Built-in plugins. Each folder is registered through deblurstack's own entry points, exactly as a
third-party package would be, and uses only the public API of the core."""
