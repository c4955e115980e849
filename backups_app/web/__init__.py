"""The staff dashboard's views and forms: thin, each one lookup, one call, one answer."""
