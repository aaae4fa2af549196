"""Conversation: dialogue state, stated features, the hard filter, multi-turn evaluation, chat.

Modules: `features` (the attribute vocabulary and what a text states, with negation), `state`
(the recommender's view of a dialogue), `filter` (full ranking, LatentCRS^F's hard filter, the
system utterance), `transcripts` (JSONL dialogues), `multi_turn` (docs/method.md 5: SR and AT, the
pipeline stage), `titles` (fuzzy title lookup) and `chat` (the interactive session).
"""
