"""The paper's user-simulator prompt (`USER_SIMILARITOR`, docs/method.md 4.2), paraphrased.

One user message with the placeholders {item_kind}, {history}, {target} and
{target_item_info}. The history is the history item names joined by "; " (MovieLens names with
the "(YYYY)" removed, as the data layer stores them); the item information follows the authors'
formats:

* MovieLens: "{name}, released in {year}, and belonging to the genres of {g1, g2}."
* Amazon (CDs, Video Games): "{title}, belongs to the category of {categories without the
  top-level 'CDs & Vinyl' / 'Video Games'}, and the description is {description}."

Later turns (docs/method.md 5, step 6) send this prompt as the first user message, then the dialogue
with roles swapped: the simulator's own past turns as "assistant", the recommender's as "user".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator import phrases
from latentcrs_jax.simulator.state import END_TOKEN

USER_SIMULATOR_PROMPT = (
    "You are a user chatting with a recommender for {item_kind} recommendation. "
    "Your history is {history}. "
    "Your target items: {target}. "
    "Here is the information about target you could use: {target_item_info}\n"
    "You must follow the instructions below during chat.\n"
    "1. State your intention clearly and guide the recommender step by step towards your "
    "target items.\n"
    "2. If the recommender recommends {target}, you should accept.\n"
    "3. If the recommender recommends other items, you should refuse them and provide the "
    "information about {target}. You should never directly tell the target item title.\n"
    "4. If the recommender asks for your preference, you should provide the information about "
    "{target}. You should never directly tell the target item title.\n"
    "5. You may mention items from your history to describe your taste.\n"
    "6. Only output what the user says: no role names, explanations or stage directions.\n"
    '7. Output "' + END_TOKEN + '" when you think the conversation should end.\n'
    "8. Only use the provided information about the target; do not make up other details.\n"
    "9. Never give many details about the target items at one time. Less than 3 conditions is "
    "better.\n"
    "10. Never directly tell the target item title.\n"
    "Now lets start, you first, act as a user."
)

LEAK_REMINDER = (
    "\n\n(Reminder, attempt {attempt}: your reply must not contain the title of the target "
    "item or any of its words, such as {words}. Describe it only through its attributes.)"
)


def movielens_item_info(item: Mapping[str, Any]) -> str:
    """ "{name}, released in {year}, and belonging to the genres of {g1, g2}." """
    name = str(item.get("title") or "").strip()
    genres = [g for g in item.get("genres") or () if g and g != "(no genres listed)"]
    parts = [name]
    if item.get("year") is not None:
        parts.append(f"released in {item['year']}")
    if genres:
        parts.append(f"and belonging to the genres of {', '.join(genres)}")
    return ", ".join(parts) + "."


def amazon_item_info(item: Mapping[str, Any], domain: str) -> str:
    """ "{title}, belongs to the category of {cats}, and the description is {description}." """
    title = str(item.get("title") or "").strip()
    top = {"video games", "cds & vinyl", domain.casefold()}
    cats = [str(c).strip() for c in item.get("categories") or ()]
    if cats and cats[0].casefold() in top:  # The authors strip only this prefix.
        cats = cats[1:]
    description = " ".join(str(item.get("description") or "").split()).rstrip(".")
    return (
        f"{title}, belongs to the category of {', '.join(cats)}, "
        f"and the description is {description}."
    )


def item_info(item: Mapping[str, Any], domain: str) -> str:
    """The target-information string of docs/method.md 4.2 for the item's domain."""
    dom = phrases.get_domain(domain)
    if dom.name == "movies":
        return movielens_item_info(item)
    return amazon_item_info(item, dom.name)


def user_simulator_prompt(
    history_titles: Sequence[str], target: Mapping[str, Any], domain: str
) -> str:
    """Fills `USER_SIMULATOR_PROMPT` for one sample.

    Args:
      history_titles: names of the history items, oldest first.
      target: the target item dict.
      domain: "movies" | "video games" | "CDs".

    Returns:
      The single user message of the paper's first turn.
    """
    dom = phrases.get_domain(domain)
    return USER_SIMULATOR_PROMPT.format(
        item_kind=dom.paper_kind,
        history="; ".join(str(t).strip() for t in history_titles),
        target=str(target.get("title") or "").strip(),
        target_item_info=item_info(target, dom.name),
    )
