"""Files users get back: signed download URLs and the routes that serve them."""
