import os

from backups_app.jobs import scheduler_lock


def test_it_lets_one_holder_at_a_time_and_reports_it(data_dir):
    assert not scheduler_lock.is_scheduler_running()

    fd = scheduler_lock.try_acquire()
    assert fd is not None
    assert scheduler_lock.try_acquire() is None
    assert scheduler_lock.is_scheduler_running()

    os.close(fd)
    assert not scheduler_lock.is_scheduler_running()
