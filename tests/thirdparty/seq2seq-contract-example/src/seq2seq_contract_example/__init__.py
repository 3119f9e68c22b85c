"""A GRU decoder and a no-repeat-n-gram beam search for seq2seq-lightning."""

from seq2seq_contract_example.decoder import ContractGRUDecoder
from seq2seq_contract_example.search import NoRepeatBeamSearch

__all__ = ["ContractGRUDecoder", "NoRepeatBeamSearch"]
