"""Phrase banks of the template simulator: domains, openers, requests, conditions, replies.

Placeholders: {np} a noun phrase with its article ("a sci-fi movie from the 1990s"), {a_noun}
the bare noun with its article ("a movie"), {noun}, {plural}, {verb} ("watch"), {ing}
("watching"), {past} ("watched"), {h} a history title, {g} genre words, {d} a decade, {y} a
year, {t} tags, {c} a category, {k}/{v} a feature's key and value, {f} a feature, {p} a
description phrase, {nth} an ordinal ("second").
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Domain:
    """How items of a domain are talked about."""

    name: str  # Canonical domain string: movies | video games | CDs.
    paper_kind: str  # {item} of the paper's prompt: movies | Video Games | CDs.
    nouns: tuple[str, ...]  # Singular nouns ("movie", "film").
    plural: str  # Plural noun.
    verb: str  # Base verb ("watch").
    ing: str  # Gerund ("watching").
    past: tuple[str, ...]  # Past forms ("watched", "saw").


DOMAINS = {
    "movies": Domain(
        "movies", "movies", ("movie", "film"), "movies", "watch", "watching", ("watched", "saw")
    ),
    "video games": Domain(
        "video games",
        "Video Games",
        ("game", "video game"),
        "games",
        "play",
        "playing",
        ("played",),
    ),
    "CDs": Domain(
        "CDs",
        "CDs",
        ("album", "CD", "record"),
        "albums",
        "listen to",
        "listening to",
        ("listened to",),
    ),
}
_ALIASES = {
    "movies": "movies",
    "movie": "movies",
    "films": "movies",
    "ml": "movies",
    "video games": "video games",
    "video_games": "video games",
    "videogames": "video games",
    "games": "video games",
    "vediogames": "video games",
    "cds": "CDs",
    "cd": "CDs",
    "cds & vinyl": "CDs",
    "cds_and_vinyl": "CDs",
    "music": "CDs",
}


def get_domain(domain: str) -> Domain:
    """Looks up a domain by name (case-insensitive, with a few aliases)."""
    key = _ALIASES.get(" ".join(str(domain).replace("-", " ").split()).casefold())
    if key is None:
        raise ValueError(f"unknown simulator domain {domain!r}; expected one of {list(DOMAINS)}")
    return DOMAINS[key]


OPENERS = (
    "Hi!",
    "Hello!",
    "Hey there.",
    "Hi, I need some help.",
    "Good evening!",
    "Hey!",
    "Hi there, quick question.",
    "Hello, I could use a recommendation.",
    "Okay, so here's the thing.",
    "Hi, hope you can help.",
    "Hey, got a minute?",
    "Hello again!",
    "Evening!",
    "Hi, I'm after a recommendation.",
    "Alright.",
    "Hey, I'm a bit stuck.",
)

# Requests that carry every condition inside one noun phrase.
NP_REQUESTS = (
    "I'm looking for {np}.",
    "Can you recommend {np}?",
    "Could you suggest {np}?",
    "I'd like to {verb} {np}.",
    "I'm in the mood for {np}.",
    "Please find me {np}.",
    "Got any ideas for {np}?",
    "Help me find {np}.",
    "I want {np}.",
    "Do you know of {np}?",
    "I'd be happy with {np}.",
    "Looking for {np}, any ideas?",
    "Recommend me {np}, please.",
    "I'm hoping to find {np}.",
    "My ideal pick right now would be {np}.",
    "Show me {np}.",
    "I need {np}.",
    "I feel like {ing} {np}.",
    "Can you point me to {np}?",
    "Any chance you could find me {np}?",
    "What I'd really enjoy is {np}.",
    "Is there {np} you'd suggest?",
    "I'm searching for {np}.",
)

# Requests without conditions, followed by one clause per condition group.
BASE_REQUESTS = (
    "I'm looking for {a_noun}.",
    "Can you recommend {a_noun}?",
    "Could you suggest {a_noun}?",
    "I want to {verb} something new.",
    "I need a new {noun}.",
    "Help me pick {a_noun}.",
    "What should I {verb} next?",
    "I'd like a recommendation.",
    "Any suggestions for me?",
    "I'm trying to find {a_noun}.",
    "Can you help me choose {a_noun}?",
    "I could use a good {noun}.",
    "Please suggest {a_noun} for me.",
    "I'm not sure what to {verb} next.",
    "Find me {a_noun}, please.",
    "I'm after {a_noun}.",
    "Let's find me {a_noun}.",
)

CLOSERS = (
    "Thanks!",
    "Thanks in advance.",
    "Any ideas?",
    "What do you suggest?",
    "Surprise me!",
    "Looking forward to your picks.",
    "Appreciate it!",
    "Cheers.",
    "What have you got?",
    "Thank you!",
    "I'm open to suggestions.",
    "Hit me with your best picks.",
    "Whatever you think fits.",
    "Curious what you'll pick.",
    "Thanks a lot.",
)

GENRE_CLAUSES = (
    "It should be {g}.",
    "I'm really into {g} these days.",
    "{G} would be perfect.",
    "I'm in the mood for some {g}.",
    "Something in the {g} genre, please.",
    "The genre I want is {g}.",
    "Ideally {g}.",
    "Make it {g}.",
    "I'm craving {g}.",
    "{G} is what I'm after.",
    "I'd go for {g}.",
)
DECADE_POST = ("from the {d}", "made in the {d}", "released in the {d}", "out of the {d}")
DECADE_CLAUSES = (
    "Preferably from the {d}.",
    "Something from the {d} would be ideal.",
    "I'm feeling nostalgic for the {d}.",
    "It should be from the {d}.",
    "I'd like it to have come out in the {d}.",
    "The {d} are my favourite era.",
    "Ideally it's from the {d}.",
)
YEAR_POST = ("from {y}", "released in {y}", "that came out in {y}", "from around {y}")
YEAR_CLAUSES = (
    "It came out in {y}.",
    "Released in {y}, if possible.",
    "Ideally it's from {y}.",
    "Something released in {y} would be ideal.",
    "{y} is the year I'm thinking of.",
)
TAG_POST = (
    "tagged {t}",
    "that people describe as {t}",
    "with {t} vibes",
    "that fits {t}",
    "known for {t}",
)
TAG_CLAUSES = (
    "Bonus points for {t}.",
    "Think {t}.",
    "Keywords I have in mind: {t}.",
    "Something people would tag {t}.",
    "I'd like it to fit {t}.",
    "The vibe I want: {t}.",
    "It should be known for {t}.",
)
CATEGORY_POST = ("in the {c} category", "under {c}", "filed under {c}", "from the {c} section")
CATEGORY_CLAUSES = (
    "It should be in the {c} category.",
    "Something under {c}, please.",
    "I'm after something in {c}.",
    "{c} is the section I'd look in.",
    "Ideally it's filed under {c}.",
)
KV_FEATURE_POST = ("whose {k} is {v}", "with {k} {v}", "where the {k} is {v}")
KV_FEATURE_CLAUSES = (
    "The {k} should be {v}.",
    "I'd like the {k} to be {v}.",
    "{K}: {v}, ideally.",
    "For the {k}, {v} please.",
)
FEATURE_POST = ('that has "{f}"', 'with "{f}"', 'that lists "{f}"')
FEATURE_CLAUSES = (
    'Ideally it has "{f}".',
    'One thing I want: "{f}".',
    'It should have "{f}".',
    'Bonus if it says "{f}".',
)
DESCRIPTION_POST = ("with {p}", "that offers {p}", "featuring {p}")
DESCRIPTION_CLAUSES = (
    "Ideally something with {p}.",
    "I'd like it to have {p}.",
    "Bonus if it comes with {p}.",
    "{P} would be great.",
    "It should offer {p}.",
)

HISTORY_CLAUSES = (
    "I recently {past} {h} and loved it.",
    "I really enjoyed {h}.",
    "{h} is one of my favorites.",
    "Something in the spirit of {h} would be great.",
    "I liked {h} a lot.",
    "My latest favorite was {h}.",
    "I'm a big fan of {h}.",
    "After {h}, I want more like that.",
    "For reference, I enjoyed {h}.",
    "I had a great time with {h}.",
    "I've been {ing} things like {h} lately.",
    "You should know I loved {h}.",
    "{h} was fantastic, by the way.",
    "Last time I {past} {h}, which I liked.",
    "I'm still thinking about {h}.",
)

# Later turns.
REJECTIONS = (
    "No, none of those are what I'm after.",
    "Hmm, not quite.",
    "Those aren't really it.",
    "I don't think any of these fit.",
    "Not what I had in mind.",
    "Thanks, but no.",
    "None of these, sorry.",
    "Close, but not there yet.",
    "Not these ones.",
    "Hmm, I'm not feeling any of those.",
    "Sorry, those don't work for me.",
    "That's not it.",
    "No luck with these.",
    "I'll pass on those.",
)
REVEAL_PREFIXES = (
    "",
    "Let me add: ",
    "Also, ",
    "To be more specific, ",
    "One more thing: ",
    "Maybe this helps: ",
    "Here's another hint: ",
    "Oh, and ",
)
ACCEPTANCES = (
    "Yes! The {nth} one is exactly what I was looking for. Thanks!",
    "That's it, the {nth} one. Perfect!",
    "Great, I'll go with the {nth} one.",
    "Oh, the {nth} one looks perfect, thank you!",
    "The {nth} one! That's the one I wanted.",
    "Perfect, the {nth} one it is. I'm all set, thanks!",
    "Yes, the {nth} one is spot on. That's all I needed.",
    "Wonderful, the {nth} one is exactly right. Thanks for the help!",
)
EXHAUSTED = (
    "I'm afraid I don't have much more to add. As I said, {clause}",
    "That's really all I can tell you. Just to repeat, {clause}",
    "I can't think of anything else, sorry. Again, {clause}",
    "I've told you everything I know. Remember, {clause}",
)
EXHAUSTED_EMPTY = (
    "I'm afraid I don't have more details, sorry. Something I'd enjoy is all I ask.",
    "I can't really describe it any better, sorry.",
    "I don't have anything more specific to add, sorry.",
)

# Last resort when every richer utterance would name the target (tried in order).
FALLBACKS = (
    "Can you recommend something?",
    "Any suggestions?",
    "What do you suggest?",
    "Please help me pick.",
    "Hello.",
    "Hi.",
)
ORDINALS = (
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
)
