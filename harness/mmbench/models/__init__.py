"""Model adapters. Each adapter module is imported only when its model is chosen."""
