"""Processes that write the bus: exchange feed workers, detectors, the publisher and the venue.

Nothing lives here yet: the feed workers arrive with issue 4, detectors with 5, the publisher
with 6. The bus they write to is the ``shm`` package.
"""
