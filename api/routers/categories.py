from api.routers.crud import crud_router
from core.commands import CategoryIn, CategoryUpdate
from core.models import Category

router = crud_router(Category, CategoryIn, CategoryUpdate, "categories", "category")
