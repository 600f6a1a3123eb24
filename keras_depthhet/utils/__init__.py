"""Small internal helpers shared by the package."""
