"""File formats and weight layouts. Only :mod:`unilstm.formats.layout` knows gate orders and transposes."""
