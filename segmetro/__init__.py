"""segmetro: replay Segment event exports into Metronome's usage-billing API."""

__version__ = "0.1.0"
