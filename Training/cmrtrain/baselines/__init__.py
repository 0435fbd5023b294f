"""Published models we compare against (loaded from their own files, never retrained here)."""
