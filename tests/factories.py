"""factory_boy factories with minimal valid defaults."""

from datetime import timedelta

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from batches import services
from batches.models import Account, ApiKey, Batch, Chunk, Item, WebhookDelivery


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
        skip_postgeneration_save = True

    batch = factory.SubFactory(BatchFactory)
    index = factory.Sequence(lambda n: n)
    type = "echo"
    payload = factory.Dict({})

    @factory.post_generation
    def seq_handed_out(item, create, extracted, **kwargs):
        """Raise the batch's last_seq to the item's seq, as the worker's reservation does."""
        if create and item.seq is not None:
            Batch.objects.filter(pk=item.batch_id, last_seq__lt=item.seq).update(last_seq=item.seq)


class ChunkFactory(DjangoModelFactory):
    class Meta:
        model = Chunk

    batch = factory.SubFactory(BatchFactory)
    start_index = 0
    end_index = factory.LazyAttribute(lambda chunk: chunk.start_index + 100)


class ApiKeyFactory(DjangoModelFactory):
    """A key made the way the application makes one; `create_with_raw` also returns the secret."""

    class Meta:
        model = ApiKey

    account = factory.SubFactory(AccountFactory)
    name = "default"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        key, _ = services.api_key_create(**kwargs)
        return key

    @classmethod
    def create_with_raw(cls, *, account=None, name="default") -> tuple[ApiKey, str]:
        """Create a key; return it and the raw key, which only this moment knows."""
        return services.api_key_create(account=account or AccountFactory(), name=name)


class WebhookDeliveryFactory(DjangoModelFactory):
    class Meta:
        model = WebhookDelivery

    batch = factory.SubFactory(BatchFactory, callback_url="http://hooks.test/")
    event = "batch.finished"
    url = factory.LazyAttribute(
        lambda delivery: delivery.batch.callback_url or "http://hooks.test/"
    )
    body = "{}"
    give_up_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))


def open_batch(*, account=None, items=3, **options):
    """Create a batch through the services with `items` echo items (or the given list)."""
    account = account or AccountFactory()
    objs = items if isinstance(items, list) else [{"payload": {"n": n}} for n in range(items)]
    batch, _ = services.batch_create(
        account=account, actor="test", items=objs or None, options=options or None
    )
    return batch
