"""Pure building blocks of the built-in scripts (X/Y/Z plot, Prompt matrix, Prompts from file)."""
