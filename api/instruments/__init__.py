"""Instruments: the KRX master (종목 마스터) in SQL, an in-process catalog of it for the hot
paths, its search, and the importer of Korea Investment's master files.

Modules: `codes` (instrument codes as clients type them), `hangul` (initial consonants),
`catalog` (the per-process copy: `InstrumentCatalog`, `InstrumentInfo`), `search` (ranking),
`importer` (`python -m api.instruments import FILE...`), `service`, `routes`, `schemas`.
"""
