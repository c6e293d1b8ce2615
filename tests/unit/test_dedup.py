import numpy as np
from datasketch import MinHash

from selfalign.dedup import MinHasher, near_duplicates, shingles

A = '''def total_price(items, tax_rate):
    """Sum the prices of items and add tax at tax_rate."""
    subtotal = sum(item.price * item.quantity for item in items)
    return round(subtotal * (1 + tax_rate), 2)
'''


A_EDITED = A.replace(", 2)", ", 3)").replace("Sum the", "Add up the")  # a near-duplicate: two small edits


B = '''def is_palindrome(text):
    """Return True if text reads the same backwards, ignoring case and spaces."""
    cleaned = "".join(ch.lower() for ch in text if not ch.isspace())
    return cleaned == cleaned[::-1]
'''


def test_near_duplicates_are_merged_first_kept():
    assert near_duplicates([A, B, A_EDITED, A, ""], threshold=0.5) == [None, None, 0, 0, None]


def test_bulk_signatures_equal_datasketch_per_token_updates():
    texts = [A, B, A_EDITED, "tiny", "x " * 500]
    for text, signature in zip(texts, MinHasher(num_perm=64, ngram=3, seed=7).signatures(texts), strict=True):
        naive = MinHash(num_perm=64, seed=7)
        for gram in shingles(text, 3):
            naive.update(gram.encode())
        assert signature is not None
        assert np.array_equal(signature, naive.hashvalues)
