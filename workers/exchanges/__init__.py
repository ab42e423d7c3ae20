"""Exchange feed workers: wire decoding, order books and sequencing, into the bus (issue 4)."""
