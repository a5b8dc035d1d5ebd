"""Streaming replies (SPEC §10): the answer grows in the chat while the model writes.

- ``pacing``: one scheduler per bot token keeps every message call of a bot under
  Telegram's global rate, finals first; previews only take what finals leave.
- ``preview``: what a channel implements to show an answer as it grows.
- ``partial``: Markdown cut mid-stream made to render stably.
- ``turn``: one turn's stream: model deltas to the preview, tool rounds as a progress line,
  ``/stop``, and the text shown so far when a model fails mid-answer.

The lifecycle (bot.lifecycle) opens a preview per generated reply and delivers the final
answer into it: the preview message is edited into the first chunk of the answer.
"""
