"""The built-in demo dataset: assistant-style utterances over ten intents, generated
deterministically from this project's own templates and slot values.

It exists so that `nlu-deploy run` trains something meaningful offline with no data of the
user's. Every example also carries word tokens and BIO slot tags, so the same sentences can
serve slot filling. Confusable pairs (alarm vs timer vs reminder, balance vs transfer) are
deliberate: a model has to read the sentence, not spot one keyword.
"""

from __future__ import annotations

import random

from nlu_deploy.data.tables import LabelledTexts
from nlu_deploy.data.tagged import TaggedSentences

SLOT_VALUES: dict[str, list[str]] = {
    "time": [
        "7 am",
        "6:30",
        "half past eight",
        "noon",
        "9 pm",
        "5:45 in the morning",
        "midnight",
        "quarter to seven",
        "10 tonight",
        "eight o'clock",
    ],
    "date": [
        "tomorrow",
        "today",
        "on friday",
        "next monday",
        "this weekend",
        "on the 3rd of may",
        "tuesday",
        "the day after tomorrow",
        "next week",
        "on sunday",
    ],
    "duration": [
        "ten minutes",
        "5 minutes",
        "half an hour",
        "an hour",
        "90 seconds",
        "two hours",
        "twenty five minutes",
        "45 seconds",
        "three minutes",
    ],
    "city": [
        "paris",
        "new york",
        "tokyo",
        "berlin",
        "lagos",
        "sao paulo",
        "mumbai",
        "seattle",
        "cape town",
        "oslo",
        "buenos aires",
        "kyoto",
    ],
    "artist": [
        "miles davis",
        "taylor swift",
        "fela kuti",
        "radiohead",
        "nina simone",
        "daft punk",
        "bach",
        "kendrick lamar",
        "bjork",
        "the beatles",
    ],
    "genre": [
        "jazz",
        "lo-fi beats",
        "classical music",
        "hip hop",
        "afrobeat",
        "rock",
        "ambient",
        "country",
        "techno",
        "bossa nova",
    ],
    "cuisine": [
        "italian",
        "sushi",
        "thai",
        "mexican",
        "ethiopian",
        "vegan",
        "indian",
        "korean barbecue",
        "greek",
        "ramen",
    ],
    "party_size": ["two", "four", "six", "2", "3", "eight", "five people", "a party of ten"],
    "amount": [
        "50 dollars",
        "$200",
        "twenty euros",
        "1000 pounds",
        "75 dollars",
        "£30",
        "300 euros",
        "a hundred bucks",
    ],
    "account": [
        "savings",
        "checking",
        "my joint account",
        "the business account",
        "my credit card",
        "my pension account",
    ],
    "person": ["mom", "alex", "my landlord", "sarah", "the plumber", "dad", "jordan", "my sister"],
    "room": ["kitchen", "living room", "bedroom", "hallway", "office", "bathroom", "garage", "porch"],
    "brightness": ["50 percent", "full", "dim", "the lowest setting", "20 percent", "maximum"],
    "event": [
        "dentist appointment",
        "team meeting",
        "yoga class",
        "lunch with sam",
        "parent teacher conference",
        "car service",
        "book club",
        "flight check in",
    ],
    "language": ["spanish", "french", "german", "japanese", "swahili", "portuguese", "hindi", "korean"],
    "phrase": [
        "where is the train station",
        "thank you very much",
        "how much does this cost",
        "i am allergic to peanuts",
        "good morning",
        "the bill please",
        "nice to meet you",
    ],
}

TEMPLATES: dict[str, list[str]] = {
    "set_alarm": [
        "wake me up at {time}",
        "set an alarm for {time}",
        "set an alarm for {time} {date}",
        "i need an alarm at {time}",
        "alarm at {time} please",
        "can you wake me at {time} {date}",
        "make sure i'm up by {time}",
        "create a wake up alarm for {time}",
        "get me up at {time} {date}",
        "set my alarm to {time}",
    ],
    "set_timer": [
        "set a timer for {duration}",
        "start a {duration} timer",
        "timer for {duration}",
        "count down {duration}",
        "let me know when {duration} have passed",
        "remind me in {duration} that the oven is done",
        "start counting down from {duration}",
        "put a timer on for {duration}",
        "give me a {duration} countdown",
    ],
    "add_reminder": [
        "remind me about the {event} {date}",
        "add {event} to my calendar for {date}",
        "put {event} on my calendar {date} at {time}",
        "schedule {event} {date}",
        "don't let me forget the {event} {date}",
        "create an event called {event} {date}",
        "i have a {event} {date} at {time}, note it down",
        "book {event} into my diary {date}",
    ],
    "get_weather": [
        "what's the weather in {city}",
        "will it rain in {city} {date}",
        "how hot will it be {date}",
        "is it going to snow in {city}",
        "weather forecast for {city} {date}",
        "do i need an umbrella {date}",
        "what is the temperature in {city} right now",
        "how cold is it in {city}",
        "tell me the forecast for {date}",
    ],
    "play_music": [
        "play some {genre}",
        "put on {artist}",
        "play {artist}",
        "i want to listen to {genre}",
        "play something by {artist}",
        "start a {genre} playlist",
        "shuffle songs by {artist}",
        "play {genre} in the {room}",
        "can i hear some {artist}",
    ],
    "book_restaurant": [
        "book a table for {party_size} at a {cuisine} place",
        "reserve a {cuisine} restaurant for {date}",
        "find me a {cuisine} restaurant in {city}",
        "table for {party_size} {date} at {time}",
        "i want to eat {cuisine} {date}",
        "make a dinner reservation for {party_size}",
        "get us a {cuisine} spot for {party_size} at {time}",
        "is there a good {cuisine} restaurant nearby",
    ],
    "transfer_money": [
        "send {amount} to {person}",
        "transfer {amount} from {account} to {person}",
        "pay {person} {amount}",
        "move {amount} into {account}",
        "wire {amount} to {person} {date}",
        "i owe {person} {amount}, send it",
        "transfer {amount} to {account}",
        "make a payment of {amount} to {person}",
    ],
    "check_balance": [
        "what's my balance",
        "how much money is in {account}",
        "check the balance on {account}",
        "how much do i have left in {account}",
        "show me my {account} balance",
        "what do i have in {account} right now",
        "am i overdrawn on {account}",
        "balance of {account} please",
        "how much is left in my account",
    ],
    "control_lights": [
        "turn on the lights in the {room}",
        "switch off the {room} lights",
        "dim the {room} lights to {brightness}",
        "set the {room} lights to {brightness}",
        "lights off in the {room}",
        "make the {room} brighter",
        "turn the {room} lamp on",
        "can you kill the lights in the {room}",
    ],
    "translate": [
        "how do you say {phrase} in {language}",
        "translate {phrase} to {language}",
        "what is {phrase} in {language}",
        "say {phrase} in {language}",
        "i need {phrase} translated into {language}",
        "{language} for {phrase}",
        "how would a {language} speaker say {phrase}",
    ],
}

PREFIXES = ["", "", "", "", "please ", "hey ", "can you ", "could you ", "ok ", "quick question, "]
SUFFIXES = ["", "", "", "", " please", " thanks", " now", " for me", " asap"]
ENDINGS = ["", "", "", ".", "?", "!"]


def _fill(template: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """Word tokens and BIO tags for one template filled with random slot values."""
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        head, name, tail = word.partition("{")
        if not name:
            tokens.append(word)
            tags.append("O")
            continue
        slot, _, rest = tail.partition("}")
        value_words = rng.choice(SLOT_VALUES[slot]).split()
        if head:
            tokens.append(head)
            tags.append("O")
        value_words[-1] += rest  # punctuation glued to the slot value stays with it, as in SNIPS
        tokens.extend(value_words)
        tags.extend([f"B-{slot}"] + [f"I-{slot}"] * (len(value_words) - 1))
    return tokens, tags


def generate_demo_examples(per_intent: int = 300, seed: int = 13) -> list[dict]:
    """Deterministic, de-duplicated examples: {"text", "label", "tokens", "tags"}."""
    rng = random.Random(seed)
    examples = []
    for intent in sorted(TEMPLATES):
        seen: set[str] = set()
        attempts = 0
        while len(seen) < per_intent and attempts < per_intent * 50:
            attempts += 1
            tokens, tags = _fill(rng.choice(TEMPLATES[intent]), rng)
            prefix, suffix, ending = rng.choice(PREFIXES).split(), rng.choice(SUFFIXES).split(), rng.choice(ENDINGS)
            tokens = prefix + tokens + suffix
            tags = ["O"] * len(prefix) + tags + ["O"] * len(suffix)
            tokens[-1] += ending
            if rng.random() < 0.3:
                tokens[0] = tokens[0].capitalize()
            text = " ".join(tokens)
            if text in seen:
                continue
            seen.add(text)
            examples.append({"text": text, "label": intent, "tokens": tokens, "tags": tags})
    rng.shuffle(examples)
    return examples


def demo_labelled_texts() -> LabelledTexts:
    examples = generate_demo_examples()
    return LabelledTexts([e["text"] for e in examples], [e["label"] for e in examples], "built-in demo data")


def demo_tagged_sentences(with_intents: bool = False) -> TaggedSentences:
    """The same utterances as word lists with BIO slot tags (16 slot types), and with
    `with_intents` their intents too (the joint task)."""
    examples = generate_demo_examples()
    return TaggedSentences(
        [e["tokens"] for e in examples],
        [e["tags"] for e in examples],
        "built-in demo data",
        intents=[e["label"] for e in examples] if with_intents else None,
    )
