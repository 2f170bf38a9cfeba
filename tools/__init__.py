"""framestore tools: the CLI verbs and the library functions behind them."""
