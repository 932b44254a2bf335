"""ClickAgg core library: settings, click model, tokens, capture service, lake, ClickHouse."""

__version__ = "0.1.0"
