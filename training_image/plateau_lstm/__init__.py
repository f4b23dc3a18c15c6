"""plateau-lstm: a residual LSTM forecaster whose training breaks out of loss plateaus."""

__version__ = "0.1.0"
