"""Pure scoring functions over text, shared by the suites."""
