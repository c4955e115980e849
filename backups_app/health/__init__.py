"""One health verdict, its problems in words, failures explained, and alert emails."""
