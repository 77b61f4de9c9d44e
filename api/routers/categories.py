from api.routers.crud import crud_router
from core.models import Category
from core.schemas import CategoryIn, CategoryUpdate

router = crud_router(Category, CategoryIn, CategoryUpdate, "categories")
