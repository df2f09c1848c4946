"""Drop-in replacements that take the peers' own arguments (Starlette's SessionMiddleware, ...)."""
