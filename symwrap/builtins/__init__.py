"""Built-in plugin modules: they register symwrap's own groups, methods and adapter through the hooks."""
