"""Forward processes (star-shaped and coupled), tail statistics and losses."""
