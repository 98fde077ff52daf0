"""Front doors: each framework's own LSTM interface, translated onto the canonical layer."""
