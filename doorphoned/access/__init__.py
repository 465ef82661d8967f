"""Access control: who may open which door when, decided locally."""
