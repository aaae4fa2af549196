"""simulator subpackage."""
