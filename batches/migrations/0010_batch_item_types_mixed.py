from django.db import migrations, models
from django.db.models import Exists, OuterRef


def mark_mixed_batches(apps, schema_editor):
    """Flag the existing batches that hold an item of another type than their own."""
    Batch = apps.get_model("batches", "Batch")
    Item = apps.get_model("batches", "Item")
    other = Item.objects.filter(batch=OuterRef("pk")).exclude(type=OuterRef("type"))
    Batch.objects.filter(Exists(other)).update(item_types_mixed=True)


class Migration(migrations.Migration):

    dependencies = [
        ('batches', '0009_chunk_slice_size'),
    ]

    operations = [
        migrations.AddField(
            model_name='batch',
            name='item_types_mixed',
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(mark_mixed_batches, migrations.RunPython.noop),
    ]
