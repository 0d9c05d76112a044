"""Plain text in the words a TTS engine should say. Piper and espeak read "km" as "k m",
"20°C" as "twenty degree C", "$5" as "dollar five" and a URL letter by letter; these are
said as a person would say them. Only what is unambiguous after a number is expanded."""

from __future__ import annotations

import re
import unicodedata

# unit: (singular, plural), each only after a number ("5 m", "5m", "3.5 km").
UNITS: dict[str, tuple[str, str]] = {
    "km": ("kilometre", "kilometres"),
    "m": ("metre", "metres"),
    "cm": ("centimetre", "centimetres"),
    "mm": ("millimetre", "millimetres"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "l": ("litre", "litres"),
    "L": ("litre", "litres"),
    "ml": ("millilitre", "millilitres"),
    "mL": ("millilitre", "millilitres"),
    "km/h": ("kilometre per hour", "kilometres per hour"),
    "kph": ("kilometre per hour", "kilometres per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "m/s": ("metre per second", "metres per second"),
    "ms": ("millisecond", "milliseconds"),
    "s": ("second", "seconds"),
    "sec": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "h": ("hour", "hours"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "W": ("watt", "watts"),
    "kW": ("kilowatt", "kilowatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "V": ("volt", "volts"),
    "KB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "%": ("percent", "percent"),
}
CURRENCIES = {"$": ("dollar", "dollars"), "€": ("euro", "euros"), "£": ("pound", "pounds")}
SCALES = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "bn": "billion"}
PHRASES = {
    "e.g.": "for example",
    "i.e.": "that is",
    "etc.": "et cetera",
    "vs.": "versus",
    "approx.": "approximately",
    "&": "and",
}

NUMBER = r"\d+(?:\.\d+)?"
_GROUPED = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d,])")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()]+[^\s<>().,;:!?'\"]")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_UNIT = re.compile(
    rf"(?<![\w.])({NUMBER})\s?("
    + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
    + r")(?![\w/°])"
)
_MONEY = re.compile(rf"([$€£])\s?({NUMBER})(?:\s?(thousand|million|billion|trillion|bn|[kKmM])\b)?")
_RANGE = re.compile(rf"(?<![\w.-])({NUMBER})\s?[-–]\s?({NUMBER})(?![\w-]|\.\d)")
_PHRASE = re.compile("|".join(rf"(?<!\w){re.escape(p)}" for p in PHRASES), re.IGNORECASE)


def _counted(number: str, forms: tuple[str, str]) -> str:
    return f"{number} {forms[0] if number == '1' else forms[1]}"


def _money(match: re.Match[str]) -> str:
    symbol, number, scale = match.groups()
    if scale:
        return f"{number} {SCALES.get(scale, scale)} {CURRENCIES[symbol][1]}"
    return _counted(number, CURRENCIES[symbol])


def spoken_words(text: str) -> str:
    """`text` (plain, one or more sentences) as it should be said."""
    text = _URL.sub("a link", text)
    text = _EMAIL.sub("an email address", text)
    text = _GROUPED.sub(lambda m: m.group().replace(",", ""), text)  # espeak: "1,000" → 1 0 0 0
    text = _MONEY.sub(_money, text)
    text = _RANGE.sub(r"\1 to \2", text)
    text = _UNIT.sub(lambda m: _counted(m[1], UNITS[m[2]]), text)
    text = _PHRASE.sub(lambda m: PHRASES[m.group().lower()], text)
    # Emoji and pictographs: engines say their names or nothing useful.
    text = "".join(c for c in text if unicodedata.category(c) != "So")
    text = re.sub(r"[ \t]+([.,!?;:])", r"\1", text)
    return re.sub(r"[ \t]+", " ", text).strip()
