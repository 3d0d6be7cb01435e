"""One module per ORM; each translates the datastore primitives and holds no rule."""
