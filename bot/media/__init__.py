"""Media a person sends (SPEC §11): photos to vision models, voice through a transcription
role, documents as text. The bytes live only for the turn; the store keeps references.

- ``intake``: one inbound message's attachments → the turn's text, image parts and
  stored references, or the one sentence that answers it without a model;
- ``documents``: text-like files and PDFs as text; ``vision``: image parts only for the
  candidate that has vision, a description or a marker for the others; ``history``: how
  stored media show in later turns; ``album``: one media group, one turn.
"""
