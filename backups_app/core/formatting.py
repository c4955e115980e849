"""Words and numbers as people read them (sizes); the pages' filters and the messages share them."""

SIZE_UNITS = ("KB", "MB", "GB", "TB", "PB")


def human_size(size, space=" "):
    """Bytes in human units (1024-based, one decimal), never "1000.0 KB": that is "1.0 MB"."""
    if size < 1000:
        return f"{size}{space}byte{'' if size == 1 else 's'}"
    value = size / 1024
    for unit in SIZE_UNITS:
        if round(value, 1) < 1000 or unit == SIZE_UNITS[-1]:
            return f"{value:.1f}{space}{unit}"
        value /= 1024
