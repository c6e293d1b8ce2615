




from selfalign.typecheck import MIN_SPLIT, batches


def test_batches_cover_every_source_once_and_use_every_worker():
    for count in (0, 1, 2, 3, 7, 63, 64, 65, 250, 251, 1000, 1001):
        for workers in (1, 2, 8):
            found = batches(count, 250, workers)
            assert [i for batch in found for i in batch] == list(range(count))
            assert all(0 < len(batch) <= 250 for batch in found)
            assert len(found) >= min(workers, count // MIN_SPLIT)
            assert len(found) <= 1 or min(map(len, found)) >= MIN_SPLIT
