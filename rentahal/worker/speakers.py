"""The seed's six Bark speaker presets, and what each means to the offline engines."""

from __future__ import annotations

BARK_PRESETS: dict[str, str] = {
    "en_male_1": "v2/en_speaker_6",
    "en_female_1": "v2/en_speaker_9",
    "german_male": "v2/de_speaker_1",
    "german_female": "v2/de_speaker_3",
    "spanish_male": "v2/es_speaker_2",
    "spanish_female": "v2/es_speaker_1",
}

# espeak-ng voices for the same presets (`+f3` is espeak's female variant).
ESPEAK_PRESETS: dict[str, str] = {
    "en_male_1": "en-us",
    "en_female_1": "en-us+f3",
    "german_male": "de",
    "german_female": "de+f3",
    "spanish_male": "es",
    "spanish_female": "es+f3",
}

ENGLISH_MALE_PRESETS = ("en_male_1",)
