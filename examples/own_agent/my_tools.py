"""The tools of a small travel assistant, as `distillery collect --tools my_tools:TOOLS` loads them.

Each tool is an ordinary typed Python function. `@tool` builds the JSON schema the model sees from
the type hints, the first paragraph of the docstring (the description) and its `Args:` section
(one line per argument).
"""

from distillery.tools import tool

WEATHER = {
    "Paris": (18, "sunny"),
    "Tokyo": (24, "cloudy"),
    "Lisbon": (21, "sunny"),
    "Oslo": (7, "rainy"),
    "Cairo": (33, "clear"),
    "Lima": (16, "foggy"),
    "Berlin": (12, "windy"),
    "Rome": (22, "sunny"),
    "Madrid": (25, "clear"),
    "Seoul": (15, "cloudy"),
}
USD_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 150.0, "CHF": 0.88}


@tool
def get_weather(city: str) -> dict:
    """Current weather in a city.

    Args:
        city: The city's name, e.g. "Paris".
    """
    if city not in WEATHER:
        raise LookupError(f"no weather for {city!r}; known: {', '.join(WEATHER)}")
    celsius, conditions = WEATHER[city]
    return {"city": city, "celsius": celsius, "conditions": conditions}


@tool
def convert_currency(amount: float, source: str, target: str) -> dict:
    """Convert money between currencies at today's rate.

    Args:
        amount: How much money, in the source currency.
        source: ISO code of the currency to convert from, e.g. "USD".
        target: ISO code of the currency to convert to, e.g. "EUR".
    """
    for code in (source, target):
        if code not in USD_RATES:
            raise LookupError(f"unknown currency {code!r}; known: {', '.join(USD_RATES)}")
    return {"amount": round(amount / USD_RATES[source] * USD_RATES[target], 2), "currency": target}


TOOLS = [get_weather, convert_currency]
