"""The lab kit: the moves every experiment and lab client makes, each written once."""
