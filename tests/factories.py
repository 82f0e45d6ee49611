"""factory_boy factories with minimal valid defaults."""

import factory
from factory.django import DjangoModelFactory

from batches import services
from batches.models import Account, Batch, Item


class AccountFactory(DjangoModelFactory):
    class Meta:
        model = Account

    name = factory.Sequence(lambda n: f"account-{n}")
    number = factory.Sequence(lambda n: 10_000 + n)


class BatchFactory(DjangoModelFactory):
    class Meta:
        model = Batch

    account = factory.SubFactory(AccountFactory)
    number = factory.Sequence(lambda n: 10_000 + n)
    type = "echo"


class ItemFactory(DjangoModelFactory):
    class Meta:
        model = Item

    batch = factory.SubFactory(BatchFactory)
    index = factory.Sequence(lambda n: n)
    type = "echo"
    payload = factory.Dict({})


def open_batch(*, account=None, items=3, **options):
    """Create a batch through the services with `items` echo items (or the given list)."""
    account = account or AccountFactory()
    objs = items if isinstance(items, list) else [{"payload": {"n": n}} for n in range(items)]
    batch, _ = services.batch_create(
        account=account, actor="test", items=objs or None, options=options or None
    )
    return batch
